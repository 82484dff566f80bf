"""Postfix policy delegation: the protocol, the policy server (mailgate policyd), the client."""
