"""Root test configuration. Area fixtures live next to their tests; the installed-stack fixture is shared."""

pytest_plugins = ["tests.stackfixture"]
