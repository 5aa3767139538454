"""The Strapi notification sidecar: settings, Strapi client, auth, sockets, read receipts."""

__version__ = "0.1.0"
