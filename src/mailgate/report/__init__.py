"""`mailgate report`: a summary of a Postfix-shaped mail log (mailgate's or Postfix's), as text or HTML."""
