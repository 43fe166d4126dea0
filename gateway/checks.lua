-- What every request the public listener receives must pass before it goes
-- anywhere, in this order:
--
-- 1. A token is configured; else 503 on every route (the gateway fails closed).
-- 2. Its request line and headers fit MAX_HEADER_BYTES; else 431.
-- 3. Its bearer token is right; else 401.
--
-- MAX_HEADER_BYTES and HEADERS_TOO_LARGE (its message) are not defined here:
-- gateway/render.py puts their definitions above this file when it inlines it
-- into the configuration.
--
-- The token is read from the process environment (PRISM_API_TOKEN, set by
-- `python -m gateway`), never from the rendered configuration, so it is absent
-- from the config file, the admin /config_dump and the logs.
--
-- A route opts out of the token check (not of the 503) with route metadata
--   metadata: {filter_metadata: {envoy.filters.http.lua: {auth: none}}}

local TOKEN = os.getenv("PRISM_API_TOKEN") or ""

-- The reply is an Envoy local reply: local_reply_config turns it into JSON for
-- HTTP clients, and Envoy itself into a trailers-only gRPC status for gRPC
-- clients (401 -> UNAUTHENTICATED, 503 -> UNAVAILABLE). Envoy maps the other
-- statuses to UNKNOWN, so for gRPC clients they name their own code.
local GRPC_STATUS = { [431] = "8" } -- RESOURCE_EXHAUSTED

local function reject(handle, status, message)
  local headers = { [":status"] = tostring(status) }
  local content_type = handle:headers():get("content-type") or ""
  if content_type:sub(1, 16) == "application/grpc" then
    headers["grpc-status"] = GRPC_STATUS[status]
  end
  if status == 401 then
    headers["www-authenticate"] = 'Bearer realm="prism"'
  end
  handle:respond(headers, message)
end

-- Counted as Envoy counts against max_request_headers_kb: names and values, the
-- request line's parts (:method, :path...) included. The codec's own limit is
-- higher and stops a request before any filter, with no answer a gRPC client
-- can read; this one answers everyone.
local function header_bytes(headers)
  local total = 0
  for name, value in pairs(headers) do
    total = total + #name + #value
  end
  return total
end

-- Equal iff same length and same bytes. The running time depends only on the
-- length of the presented value, never on the token or on where they differ:
-- every byte is compared and the results are OR-ed together, and the length
-- check is folded into the same accumulator.
local function same_token(given)
  local expected_length = #TOKEN
  local difference = bit.bxor(#given, expected_length)
  for i = 1, #given do
    local expected = TOKEN:byte((i - 1) % expected_length + 1)
    difference = bit.bor(difference, bit.bxor(given:byte(i), expected))
  end
  return difference == 0
end

function envoy_on_request(handle)
  if TOKEN == "" then
    reject(handle, 503, "the gateway has no API token configured")
    return
  end
  local headers = handle:headers()
  if header_bytes(headers) > MAX_HEADER_BYTES then
    reject(handle, 431, HEADERS_TOO_LARGE)
    return
  end
  if handle:metadata():get("auth") ~= "none" then
    local authorization = headers:get("authorization")
    -- RFC 7235: the scheme name is case-insensitive.
    local given = authorization and authorization:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +([^ ]+) *$")
    if given == nil or not same_token(given) then
      reject(handle, 401, "missing or invalid bearer token")
      return
    end
  end
end
