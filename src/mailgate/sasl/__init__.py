"""SMTP AUTH back ends: the Dovecot authentication client (Postfix's smtpd_sasl_type = dovecot)."""
