"""The stand-ins behaviour, imported by the launchers one directory up."""
