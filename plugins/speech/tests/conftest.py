pytest_plugins = ["switchboard.testing"]
