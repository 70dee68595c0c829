"""The web dyno (``outdial web``): one aiohttp application; :mod:`workers.web.app` builds and serves it."""
