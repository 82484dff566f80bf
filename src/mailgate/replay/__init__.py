"""`mailgate replay`: what a configuration would have answered to recorded traffic."""
