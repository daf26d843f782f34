"""Stored `/v1/responses` responses: what `previous_response_id`, `item_reference`, reasoning
items sent back by id and `GET`/`DELETE /v1/responses/{id}` read.

A stored response is the response object as `GET` returns it and the conversation it
ended: every input item (earlier turns' included) then its output items, kept whole
(reasoning items with their provider signature in `encrypted_content`, whatever the
request's `include` showed the client). Continuing it is one read: the stored items, then
the new input. Items with an `id` can also be read by id (`items`).

`MemoryStore` keeps them in this process, at most `MAX_STORED_RESPONSES` (the oldest
dropped first) and each for `RESPONSES_TTL_S`; `RedisStore` keeps them in Redis (one key
per response, one per item with an id, each expiring after `RESPONSES_TTL_S`), on the
connection pool of the resumable streams' store, so any worker or replica continues a
conversation another one started.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection
from typing import Any, Protocol

import msgspec

#: The most responses one process keeps without `REDIS_URL` (the oldest go first).
MAX_STORED_RESPONSES = 10_000

Item = dict[str, Any]


class StoredResponse(msgspec.Struct):
    response: dict[str, Any]  # the response object as `GET /v1/responses/{id}` answers it
    items: list[Item]  # the conversation: every input item, then the output items


_stored_decoder = msgspec.json.Decoder(StoredResponse)
_item_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


class ResponseStore(Protocol):
    async def put(self, stored: StoredResponse, new_items: Collection[Item]) -> None:
        """Keep `stored` (replacing a response of the same id); `new_items`: those of its
        items that no earlier stored response holds (indexed by their ids)."""
        ...

    async def get(self, response_id: str) -> StoredResponse | None: ...

    async def items(self, ids: Collection[str]) -> dict[str, Item]:
        """The stored items of these ids (unknown ones left out)."""
        ...

    async def delete(self, response_id: str) -> bool: ...


class MemoryStore:
    """Responses kept in this process, bounded by count and by age."""

    def __init__(self, ttl_s: float, max_responses: int = MAX_STORED_RESPONSES) -> None:
        self.ttl_s = ttl_s
        self.max_responses = max_responses
        self.responses: OrderedDict[str, tuple[float, StoredResponse, list[str]]] = OrderedDict()
        self.by_id: dict[str, tuple[str, Item]] = {}  # item id → (its response's id, the item)

    async def put(self, stored: StoredResponse, new_items: Collection[Item]) -> None:
        response_id: str = stored.response["id"]
        self._drop(response_id)
        own = []
        for item in new_items:
            item_id = item.get("id")
            if type(item_id) is str:
                self.by_id[item_id] = (response_id, item)
                own.append(item_id)
        self.responses[response_id] = (time.monotonic() + self.ttl_s, stored, own)
        while len(self.responses) > self.max_responses:
            self._drop(next(iter(self.responses)))

    async def get(self, response_id: str) -> StoredResponse | None:
        entry = self.responses.get(response_id)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._drop(response_id)
            return None
        return entry[1]

    async def items(self, ids: Collection[str]) -> dict[str, Item]:
        found = {}
        for item_id in ids:
            entry = self.by_id.get(item_id)
            if entry is not None and await self.get(entry[0]) is not None:
                found[item_id] = entry[1]
        return found

    async def delete(self, response_id: str) -> bool:
        return self._drop(response_id)

    def _drop(self, response_id: str) -> bool:
        entry = self.responses.pop(response_id, None)
        if entry is None:
            return False
        for item_id in entry[2]:
            if self.by_id.get(item_id, ("",))[0] == response_id:
                del self.by_id[item_id]
        return True


def response_key(response_id: str) -> bytes:
    return b"streamgate:response:" + response_id.encode()


def item_key(item_id: str) -> bytes:
    return b"streamgate:response-item:" + item_id.encode()


class RedisStore:
    """Responses kept in Redis (or Valkey): plain keys with a TTL, written in one pipeline."""

    def __init__(self, redis: Any, ttl_s: float) -> None:
        self.redis = redis  # a `redis.asyncio.Redis` (the stream store's)
        self.ttl_ms = int(ttl_s * 1000)

    async def put(self, stored: StoredResponse, new_items: Collection[Item]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(response_key(stored.response["id"]), _encoder.encode(stored), px=self.ttl_ms)
        for item in new_items:
            item_id = item.get("id")
            if type(item_id) is str:
                pipe.set(item_key(item_id), _encoder.encode(item), px=self.ttl_ms)
        await pipe.execute()

    async def get(self, response_id: str) -> StoredResponse | None:
        data = await self.redis.get(response_key(response_id))
        return None if data is None else _stored_decoder.decode(data)

    async def items(self, ids: Collection[str]) -> dict[str, Item]:
        ids = list(ids)
        if not ids:
            return {}
        values = await self.redis.mget([item_key(item_id) for item_id in ids])
        pairs = zip(ids, values, strict=True)
        return {item_id: _item_decoder.decode(value) for item_id, value in pairs if value is not None}

    async def delete(self, response_id: str) -> bool:
        return bool(await self.redis.delete(response_key(response_id)))


def store_for(ttl_s: float, stream_store: object) -> ResponseStore:
    """Redis when the resumable streams live there (`REDIS_URL`), else this process."""
    redis = getattr(stream_store, "redis", None)
    return RedisStore(redis, ttl_s) if redis is not None else MemoryStore(ttl_s)
