"""Small command-line tools: rendering synthetic digits, reports."""
