"""The web chat page (package data: index.html, app.js, app.css)."""
