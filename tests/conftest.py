"""The suite's shared fixtures live in tests/fixtures/; these plugins make them visible to every
test (hubs of tiny models, the keyword hub and data, runs and a fake LLM's run options, the
sandboxes with their Docker skip/fail rule). No test imports another test folder's conftest."""

# First, as in the `autoannotator` command: agent.cli sets the libraries' environment (no
# Hugging Face progress bars) before anything imports them, the fixture plugins included.
import agent.cli  # noqa: F401

pytest_plugins = [
    "tests.fixtures.hubs",
    "tests.fixtures.keywords",
    "tests.fixtures.runs",
    "tests.fixtures.ray",
    "tests.fixtures.sandbox",
]
