"""udpchat's tests: run them with C{python -m pytest} or C{python -m twisted.trial tests}."""
