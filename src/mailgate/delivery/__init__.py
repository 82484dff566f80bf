"""Delivery agents behind one interface (Maildir now; SMTP and LMTP later)."""
