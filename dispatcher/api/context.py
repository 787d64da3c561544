"""What route handlers reach through the app: the wired parts, under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from dispatcher.api.limits import InProgress
from dispatcher.auth import Authenticator, Principal
from dispatcher.delivery.deliverer import Deliverer
from dispatcher.delivery.endpoints import EndpointBook
from dispatcher.delivery.netguard import NetworkPolicy
from dispatcher.delivery.secrets import TenantSecrets
from dispatcher.events import EventHub
from dispatcher.handlers import Registry
from dispatcher.metrics import Metrics
from dispatcher.settings import Settings
from dispatcher.store.base import Store
from dispatcher.store.feed import ChangeFeed
from dispatcher.worker import WorkerPool


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    registry: Registry
    hub: EventHub
    feed: ChangeFeed
    network: NetworkPolicy
    auth: Authenticator
    pool: WorkerPool
    deliverer: Deliverer
    in_progress: InProgress
    secrets: TenantSecrets
    endpoints: EndpointBook
    metrics: Metrics


SERVICES = web.AppKey("services", Services)
PRINCIPAL = web.RequestKey("principal", Principal)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]
