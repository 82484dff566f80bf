"""Property-based and stateful fuzz tests of the parsers that read outside input."""
