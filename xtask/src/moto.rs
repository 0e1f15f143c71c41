//! An S3-compatible server for tests: `moto` in server mode, installed from PyPI into a throwaway
//! virtual environment under target/ (like schemathesis), started on a free port.
