"""The SMTP protocol core (sans-IO) and Postfix-compatible address parsing."""
