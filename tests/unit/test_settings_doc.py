"""docs/configuration.md lists every declared settings key of every module and account kind, as the
declarations say (ops/settings_doc.py writes it from them)."""
from ops import settings_doc
from services.backends.registry import PROVIDERS
from shared.config import MODULES
from shared.settings import describe


def test_every_module_and_backend_kind_has_its_table():
    tables = " ".join(settings_doc.TABLES)
    assert all(f"[modules.{m}]" in tables for m in MODULES)
    assert all(f'"{kind}"' in tables for kind in PROVIDERS)


def test_the_doc_lists_every_declared_key_and_is_up_to_date():
    text = settings_doc.DOC.read_text()
    for table, target in settings_doc.TABLES.items():
        section = text.split(f"## `{table}`", 1)[1].split("\n## ", 1)[0]
        for key, _want, _default, _doc in describe(settings_doc.settings_class(target)):
            assert f"| `{key}` |" in section, (table, key)
    assert text == settings_doc.render(), "docs/configuration.md is out of date: run python -m ops.settings_doc"
    assert settings_doc.main(["--check"]) == 0


WRONG: tuple[object, ...] = ("x", "", 3, -1, 0, 2.5, float("inf"), True, [], [1], ["a", ""], {}, {"a": 1},
                             {"standard": "x"}, {"deep": [1]}, [[1, 2]])
CONTEXT = {"services.backends.openai_wire:Keys": {"base_url": "http://127.0.0.1:1/v1", "model": "m"},
           "services.backends.web.settings:WebKeys": {"url": "http://127.0.0.1:1", "progress_grace": 90.0}}


def test_every_declared_key_refuses_a_wrong_value_with_a_settings_error_and_nothing_else():
    """Bad input gets a clear error: whatever a table holds, its reader raises SettingsError naming the key
    (a parse function that met a list where it wanted a table would otherwise crash the program)."""
    from shared.settings import SettingsError, load, specs
    for target in settings_doc.TABLES.values():
        cls, context = settings_doc.settings_class(target), CONTEXT.get(target, {})
        for key in specs(cls):
            for value in WRONG:
                table = {key: value} if key not in context else {**context, key: value}
                try:
                    load(cls, table, "[t]", defaults=context)
                except SettingsError as exc:
                    assert str(exc).startswith("[t"), (target, key, value, exc)   # [t] or [t.fetch]
                except Exception as exc:   # noqa: BLE001  (the point: nothing but SettingsError)
                    raise AssertionError(f"{target} {key} = {value!r}: {type(exc).__name__}: {exc}") from exc
