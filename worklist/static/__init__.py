"""Files of the radiologists' worklist page (HTML, JS, CSS), served by ``worklist/page.py``: no build step."""
