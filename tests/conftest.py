import os

# pygame prints a banner on import; tests import it through gym-pusht.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
