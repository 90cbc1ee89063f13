"""Glance v2: images."""

from __future__ import annotations

from typing import Any

from .base import BaseHandler


class GlanceImagesHandler(BaseHandler):
    service = "image"
    route = "/v2/images"

    def image_view(self, img: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = dict(img.get("properties", {}))
        for k, v in img.items():
            if k not in ("properties", "users"):
                view[k] = v
        view.setdefault("protected", False)
        view.setdefault("os_hidden", False)
        view.setdefault("tags", [])
        view["self"] = f"/v2/images/{img['id']}"
        view["file"] = f"/v2/images/{img['id']}/file"
        view["schema"] = "/v2/schemas/image"
        return view

    async def get(self, image_id: str | None = None) -> None:
        images = self.double.catalogue["images"]
        if image_id is not None:
            img = self.double.find("images", image_id)
            if img is None:
                self.send_error_body(404, f"No image found with ID {image_id}")
                return
            self.send_json(200, self.image_view(img))
            return
        marker = self.get_query_argument("marker", None)
        if marker is not None:
            ids = [i["id"] for i in images]
            images = images[ids.index(marker) + 1 :] if marker in ids else []
        limit_arg = self.get_query_argument("limit", "25")
        limit = int(limit_arg) if limit_arg.isdigit() else 25
        page = images[:limit]
        body: dict[str, Any] = {
            "images": [self.image_view(i) for i in page],
            "schema": "/v2/schemas/images",
            "first": "/v2/images",
        }
        if len(images) > limit:
            body["next"] = f"/v2/images?marker={page[-1]['id']}"
        self.send_json(200, body)


ROUTES = [
    (r"/v2/images", GlanceImagesHandler),
    (r"/v2/images/([^/]+)", type("GlanceImageHandler", (GlanceImagesHandler,), {"route": "/v2/images/{id}"})),
]
