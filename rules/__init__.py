"""linelight rules: the pure core (values, TOML rule model, expressions, evaluator, rule tests)."""
