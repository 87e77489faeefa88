"""The toolkit's library, one concern per module; ``common.py`` at the top maps it and re-exports what commands use."""
