"""Delivery: copy the products listed in the products manifest to the delivery location and verify them.

Delivered copies are verified against the manifest's sha256 after copying. Nothing here ever deletes a
delivered product. No product is held in the operator's memory: a copy within the object store is the store's
own (S3 CopyObject), any other is streamed in blocks, and the sha256 is read in blocks.
"""

from __future__ import annotations

from mousflow.errors import first_line
from mousflow.storage.integrity import sha256_of_object
from mousflow.storage.location import Location, classify_failure


class DeliveryError(RuntimeError):
    pass


def products_location(output_uri: str) -> Location:
    return Location.of(output_uri).join("products")


def deliver(output_uri: str, delivery_uri: str | None) -> tuple[str, int]:
    """Copy every product (and manifest.json) to `delivery_uri`; returns (where, number of products).
    Without a delivery location the products are delivered where they are, after verification."""
    src = products_location(output_uri)
    manifest = src.join("manifest.json").read_json()
    dst = Location.of(delivery_uri) if delivery_uri else src
    for product in manifest["products"]:
        target = dst.join(product["name"])
        if dst != src and not (target.exists() and sha256_of_object(target) == product["sha256"]):
            src.join(product["name"]).copy_to(target)
        got = sha256_of_object(target)
        if got != product["sha256"]:
            raise DeliveryError(f"{target.uri}: sha256 {got} differs from the manifest's {product['sha256']}")
    if dst != src:
        src.join("manifest.json").copy_to(dst.join("manifest.json"))
    return dst.uri, len(manifest["products"])


def delivery_failure_facts(exc: BaseException) -> dict:
    """What a failed delivery means for the lifecycle (lifecycle.Facts): the object store unreachable is waited
    out like a run's transient failure (the MOUS stays DeliveryInProgress with the Waiting condition, and
    delivery is tried again: what was copied and verified is not copied again); anything else (a product that
    does not match its checksum, credentials refused) fails the delivery."""
    failure = classify_failure(exc)
    if failure.reason == "Unavailable":
        return {"waiting": f"delivery waits for the object store: {first_line(failure)}"}
    return {"delivered": False, "delivery_message": f"delivery failed: {exc}"}
