"""Static files of the quality page."""
