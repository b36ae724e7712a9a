-- Received versus ordered quantity by material and unit, over live material lines of live POs.
SELECT li.connection_id,
       li.material_key,
       MAX(m.name) AS material_name,
       li.uom_key,
       COUNT(*) AS lines,
       SUM(li.quantity) AS ordered_quantity,
       SUM(COALESCE(li.received_quantity, 0)) AS received_quantity,
       SUM(COALESCE(li.received_quantity, 0)) / NULLIF(SUM(li.quantity), 0) AS received_share
FROM purchase_order_line_items li
JOIN purchase_orders po
  ON po.connection_id = li.connection_id AND po.key = li.purchase_order_key
LEFT JOIN materials m
  ON m.connection_id = li.connection_id AND m.key = li.material_key AND m.deleted_at IS NULL
WHERE li.deleted_at IS NULL
  AND li.material_key IS NOT NULL
  AND po.deleted_at IS NULL
  AND COALESCE(po.status_key, '') NOT IN ('cancelled', 'draft')
GROUP BY li.connection_id, li.material_key, li.uom_key
