"""Configuration: main.cf parsing, the parameter table and frozen settings."""
