"""`mailgate policyd`: the restriction engine behind Postfix's policy protocol (above the engine)."""
