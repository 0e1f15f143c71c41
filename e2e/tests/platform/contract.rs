//! Contract fuzzing: schemathesis against a running test platform's /openapi.json (issue 17).
