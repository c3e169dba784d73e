"""Training and evaluation of the built-in tiny OpenCLIP model on procedural shape images."""
