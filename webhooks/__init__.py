"""Strapi webhooks in: the receiver endpoint and the notification lifecycle it drives."""
