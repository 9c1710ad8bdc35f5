# Sourced (not run) by mps.sh, dynamic_shares.sh and dra_shares.sh, after setup.sh: what every MPS check on the
# real GPU does alike — the driver on PATH, the GPU's state before, two clients at once with the environments
# kgpu handed them, and the compute mode checked unchanged. The caller sets $WORK and $OUT and keeps $fail.
DRIVER_ROOT="${KGPU_DRIVER_ROOT:-/usr/local/nvidia}"
export PATH="$DRIVER_ROOT/bin:$PATH"
export LD_LIBRARY_PATH="$DRIVER_ROOT/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

gpu_before() {  # sets MODE_BEFORE and TOTAL_SMS
  echo "== the GPU before (nvidia-smi) =="
  nvidia-smi --query-gpu=index,uuid,name,memory.total,compute_mode --format=csv | tee "$OUT/smi-before.csv"
  MODE_BEFORE="$(nvidia-smi -i 0 --query-gpu=compute_mode --format=csv,noheader)"
  TOTAL_SMS="$(CUDA_MPS_PIPE_DIRECTORY=/nonexistent python3 -c 'import torch; print(torch.cuda.get_device_properties(0).multi_processor_count)')"
  echo "SMs of GPU 0 (torch, no MPS): $TOTAL_SMS"
}

_mps_client() {  # name within-GiB beyond-GiB (its environment: $OUT/<name>.env)
  env $(cat "$OUT/$1.env") python3 scripts/device/mps_helper.py client --name "$1" --within "$2" --beyond "$3" \
    --barrier "$WORK/barrier" --hold 6 --report "$OUT/client-$1.json" > "$OUT/client-$1.log" 2>&1
}

two_clients_at_once() {  # pipe-dir name1 within1 beyond1 name2 within2 beyond2
  local pipe="$1" server clients c1 c2
  mkdir -p "$WORK/barrier"
  _mps_client "$2" "$3" "$4" & c1=$!
  _mps_client "$5" "$6" "$7" & c2=$!
  for _ in $(seq 1 240); do [ "$(ls "$WORK/barrier" | wc -l)" -ge 2 ] && break; sleep 0.25; done
  sleep 1
  server="$(echo get_server_list | CUDA_MPS_PIPE_DIRECTORY="$pipe" timeout 10 nvidia-cuda-mps-control | head -1)"
  clients="$(echo "get_client_list $server" | CUDA_MPS_PIPE_DIRECTORY="$pipe" timeout 10 nvidia-cuda-mps-control)"
  echo "MPS server pid: $server; its clients: $(echo "$clients" | tr '\n' ' ')"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv | tee "$OUT/smi-apps.csv"
  wait $c1; wait $c2
  clients="$(echo "$clients" | grep -c '[0-9]')"
  [ "$clients" -ge 2 ] || { echo "FAIL: the MPS server had $clients client(s) while both ran, expected 2"; fail=1; }
  python3 scripts/device/mps_helper.py check --out "$OUT" --total-sms "$TOTAL_SMS" "$2" "$5" || fail=1
}

compute_mode_unchanged() {
  local after
  after="$(nvidia-smi -i 0 --query-gpu=compute_mode --format=csv,noheader)"
  echo "compute mode before: $MODE_BEFORE, after: $after"
  [ "$MODE_BEFORE" = "$after" ] || { echo "FAIL: compute mode changed"; fail=1; }
}
