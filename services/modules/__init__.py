"""Research modules (explorer, documenter, researcher): stateless processes that propose tasks and apply
their results. They never talk to a model and never import a provider SDK or Playwright."""
