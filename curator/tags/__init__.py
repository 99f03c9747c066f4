"""Tags: how they are stored, the rules over them, and the one effective view of them."""
