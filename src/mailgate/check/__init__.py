"""`mailgate check`: run transactions through the restriction engine without a network."""
