"""Run configurations (Python files with get_config()); `default.py` is the shared base."""
