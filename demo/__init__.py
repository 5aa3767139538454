"""A runnable demo: Strapi, the notification sidecar and a page to try them (`python -m demo`).

Tests start the same stack on free ports with a temporary data folder::

    with DemoStack(DemoConfig(strapi_port=0, sidecar_port=0, page_port=0, data_dir=tmp)) as stack:
        stack.page_url, stack.strapi_url, stack.sidecar_url, stack.credentials
"""

from __future__ import annotations

from demo.config import DemoConfig
from demo.credentials import Credentials, DemoUser
from demo.stack import DemoStack, PortInUse

__all__ = ["Credentials", "DemoConfig", "DemoStack", "DemoUser", "PortInUse"]
