"""The Gradio app: the explorer service (what the app and its API can ask of a cache), presenters that
turn its answers into tables and Markdown, ATM jobs, figures, the UI handlers and the About text.
The layout lives in app.py at the repository root."""
