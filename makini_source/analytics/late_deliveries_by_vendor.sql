-- Late deliveries by vendor: lines delivered after their due date, or past due and not
-- fully received, out of all live lines with a due date.
SELECT po.connection_id,
       po.vendor_key,
       MAX(v.name) AS vendor_name,
       COUNT(*) AS lines_due,
       SUM(CASE WHEN li.delivery_at > li.due_at
                  OR (li.delivery_at IS NULL AND li.due_at < CURRENT_TIMESTAMP
                      AND COALESCE(li.received_quantity, 0) < li.quantity)
                THEN 1 ELSE 0 END) AS lines_late,
       SUM(CASE WHEN li.delivery_at > li.due_at
                  OR (li.delivery_at IS NULL AND li.due_at < CURRENT_TIMESTAMP
                      AND COALESCE(li.received_quantity, 0) < li.quantity)
                THEN 1 ELSE 0 END) * 1.0 / COUNT(*) AS late_share
FROM purchase_orders po
JOIN purchase_order_line_items li
  ON li.connection_id = po.connection_id AND li.purchase_order_key = po.key
LEFT JOIN vendors v
  ON v.connection_id = po.connection_id AND v.key = po.vendor_key AND v.deleted_at IS NULL
WHERE po.deleted_at IS NULL
  AND li.deleted_at IS NULL
  AND li.due_at IS NOT NULL
  AND COALESCE(po.status_key, '') NOT IN ('cancelled', 'draft')
GROUP BY po.connection_id, po.vendor_key
