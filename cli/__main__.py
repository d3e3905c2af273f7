"""``python -m cli``: the same ``fanoctl`` as the console script (cli/fanoctl.py assembles it)."""
from cli.fanoctl import main

if __name__ == "__main__":   # importing this module (tools that walk the package) runs nothing
    main(prog_name="fanoctl")
