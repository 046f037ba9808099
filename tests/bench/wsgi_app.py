"""A small Flask service for the throughput benchmark: JSON in and out, a template-free page,
a little per-request allocation work, like an everyday API endpoint."""
import json

from flask import Flask, jsonify, request

app = Flask(__name__)
ITEMS = {i: {"id": i, "name": "item-%d" % i, "tags": ["a", "b", "c"]} for i in range(1000)}


@app.route("/items/<int:item_id>")
def item(item_id):
    it = ITEMS.get(item_id % 1000)
    related = [ITEMS[(item_id + k) % 1000]["name"] for k in range(20)]
    return jsonify({"item": it, "related": related, "q": request.args.get("q", "")})


@app.route("/health")
def health():
    return json.dumps({"ok": True})
