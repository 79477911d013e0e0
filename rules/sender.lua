-- rules/sender.lua: the Domino "sender" controls of SPEC section 5. This module has no handlers yet: the
-- inbound controls arrive with their own issue. It exists so that the default server.rules list loads, and so
-- that a site can already shadow it from server.rules_dir.
local M = {}

return M
