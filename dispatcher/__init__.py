"""The Hark dispatcher: one URL in front of several deployments, forwarding each request to the
deployment serving its language (the map of ``HARK_ROUTES``, see :mod:`hark.route_map`).

For clients that cannot embed :mod:`hark.router`. Optional: a gateway rule (nginx ``map`` on the
``language`` query parameter, ``deploy/gateway/``) does the same job without a process of its own.
"""
