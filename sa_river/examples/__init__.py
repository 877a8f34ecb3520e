"""Small runnable examples that ship with sa_river."""
