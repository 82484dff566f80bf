"""`mailgate lint`: configuration mistakes that silently let spam in or keep mail out."""
