"""DNS: an async resolver, Postfix's dns_lookup layer, host names and DNS list helpers."""
