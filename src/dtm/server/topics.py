"""Topics of 2-phase messages: a topic's subscribers are one KV pair in category "topics".

Routing reads the store on every message (one indexed read), never a cache, so a topic
deleted or changed is routed as it now is (upstream routes a deleted topic from its cache).
"""

from __future__ import annotations

import msgspec

from dtm.server.stores.base import Store

CATEGORY = "topics"
_VERSION_RACES = 5


class TopicError(Exception):
    """Subscribe/unsubscribe could not be done; the message says why."""


class Subscriber(msgspec.Struct):
    url: str
    remark: str = ""


_subscribers = msgspec.json.Decoder(list[Subscriber])
_encode = msgspec.json.Encoder().encode


async def subscribers(store: Store, topic: str) -> list[Subscriber]:
    kvs = await store.find_kv(CATEGORY, topic)
    return _subscribers.decode(kvs[0].v) if kvs else []


async def subscribe(store: Store, topic: str, url: str, remark: str) -> None:
    for _ in range(_VERSION_RACES):
        kvs = await store.find_kv(CATEGORY, topic)
        if not kvs:
            value = _encode([Subscriber(url, remark)]).decode()
            if await store.create_kv(CATEGORY, topic, value):
                return
            continue  # created meanwhile by another request
        subs = _subscribers.decode(kvs[0].v)
        if any(s.url == url for s in subs):
            raise TopicError("this url exists")
        subs.append(Subscriber(url, remark))
        value = _encode(subs).decode()
        if await store.update_kv(CATEGORY, topic, value, version=kvs[0].version):
            return
    raise TopicError("topic changed concurrently too often, try again")


async def unsubscribe(store: Store, topic: str, url: str) -> None:
    for _ in range(_VERSION_RACES):
        kvs = await store.find_kv(CATEGORY, topic)
        if not kvs:
            raise LookupError("no such a topic")
        subs = _subscribers.decode(kvs[0].v)
        kept = [s for s in subs if s.url != url]
        if len(kept) == len(subs):
            raise LookupError("no such an url")
        value = _encode(kept).decode()
        if await store.update_kv(CATEGORY, topic, value, version=kvs[0].version):
            return
    raise TopicError("topic changed concurrently too often, try again")
