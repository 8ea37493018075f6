"""The API tier: a Flask app (``web.app.create_app``) served by gunicorn (``hark api``, ``web.server``).

It validates, probes and routes requests and sends tasks by name; it never imports the engine.
"""
