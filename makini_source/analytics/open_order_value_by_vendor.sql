-- Open (not yet received) order value by vendor and currency.
-- A line is open while its received quantity is below its ordered quantity, on a live PO
-- that is neither cancelled, closed nor completed.
SELECT po.connection_id,
       po.vendor_key,
       MAX(v.name) AS vendor_name,
       po.currency_key,
       COUNT(DISTINCT po.key) AS open_orders,
       SUM((li.quantity - COALESCE(li.received_quantity, 0)) * li.price) AS open_value
FROM purchase_orders po
JOIN purchase_order_line_items li
  ON li.connection_id = po.connection_id AND li.purchase_order_key = po.key
LEFT JOIN vendors v
  ON v.connection_id = po.connection_id AND v.key = po.vendor_key AND v.deleted_at IS NULL
WHERE po.deleted_at IS NULL
  AND li.deleted_at IS NULL
  AND po.completed_at IS NULL
  AND COALESCE(po.status_key, '') NOT IN ('cancelled', 'closed', 'draft')
  AND li.quantity > COALESCE(li.received_quantity, 0)
GROUP BY po.connection_id, po.vendor_key, po.currency_key
