pytest_plugins = ["tests.support.db"]
