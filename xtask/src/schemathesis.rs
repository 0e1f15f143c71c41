//! Installs schemathesis (pinned, from PyPI) into a throwaway virtual environment for the contract tests.
