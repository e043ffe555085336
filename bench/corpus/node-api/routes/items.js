const express = require("express");

const router = express.Router();
const items = new Map();

router.get("/", (req, res) => res.json([...items.values()]));

router.put("/:id", (req, res) => {
  items.set(req.params.id, { id: req.params.id, ...req.body });
  res.status(201).json(items.get(req.params.id));
});

module.exports = router;
