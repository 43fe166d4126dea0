-- Bearer-token check for every request the public listener receives.
--
-- The token is read from the process environment (PRISM_API_TOKEN, set by
-- `python -m gateway`), never from the rendered configuration, so it is absent
-- from the config file, the admin /config_dump and the logs. While no token is
-- configured every route answers 503: the gateway fails closed.
--
-- A route opts out of the token check (not of the 503) with route metadata
--   metadata: {filter_metadata: {envoy.filters.http.lua: {auth: none}}}

local TOKEN = os.getenv("PRISM_API_TOKEN") or ""

-- The reply is an Envoy local reply: local_reply_config turns it into JSON for
-- HTTP clients, and Envoy itself into a trailers-only gRPC status for gRPC
-- clients (401 -> UNAUTHENTICATED, 503 -> UNAVAILABLE).
local function reject(handle, status, message)
  local headers = { [":status"] = tostring(status) }
  if status == 401 then
    headers["www-authenticate"] = 'Bearer realm="prism"'
  end
  handle:respond(headers, message)
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
  if handle:metadata():get("auth") == "none" then
    return
  end
  local authorization = handle:headers():get("authorization")
  -- RFC 7235: the scheme name is case-insensitive.
  local given = authorization and authorization:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +([^ ]+) *$")
  if given == nil or not same_token(given) then
    reject(handle, 401, "missing or invalid bearer token")
  end
end
