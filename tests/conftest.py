pytest_plugins = ["tests.support.db", "tests.support.llm", "tests.support.deployment"]
