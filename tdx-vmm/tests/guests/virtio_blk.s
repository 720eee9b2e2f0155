# A TD guest (64-bit, ring 0, entered at 1 MiB by the ELF payload contract) that drives the
# virtio-blk device at 0xFEB00000 (its shared GPA: bit 47 set) through TDG.VP.VMCALL<#VE.RequestMMIO> only (the engine's
# TDCALL doorbell `out 0xdc, al`), with its split queue, request header, data and status in a
# shared (MapGPA) bounce region at GPA 0x200000: VERSION_1 + ACCESS_PLATFORM negotiated, one
# IN request for sector 0 (the used ring polled, bounded), then the first 16 bytes of the sector printed on the serial port and
# exit status 0 on port 0x501 (1 on any failure). Assembled by the test with GNU as.
.intel_syntax noprefix
.code64
.set BASE, 0xFEB00000
.set SH, 0xffff800000200000
.macro VMCALL_SETUP
  xor eax, eax
  mov ecx, 0xfc00
  xor r10d, r10d
.endm
.macro MMIO_W off, val
  VMCALL_SETUP
  mov r11d, 48
  mov r12d, 4
  mov r13d, 1
  movabs r14, 0x800000000000 + BASE + \off
  mov r15d, \val
  out 0xdc, al
  test r10, r10
  jnz fail
.endm
.macro MMIO_R off
  VMCALL_SETUP
  mov r11d, 48
  mov r12d, 4
  xor r13d, r13d
  movabs r14, 0x800000000000 + BASE + \off
  xor r15d, r15d
  out 0xdc, al
  test r10, r10
  jnz fail
.endm
start:
  # VA SH -> shared alias of GPA 0x200000 (PML4[256] -> PDPT 0x103000 -> PD 0x104000)
  mov eax, 0x103007
  mov qword ptr [0x1800], rax
  mov rax, cr3
  mov cr3, rax
  # MapGPA(0x800000200000, 0x2000) to shared
  VMCALL_SETUP
  mov r11d, 0x10001
  movabs r12, 0x800000200000
  mov r13d, 0x2000
  out 0xdc, al
  test r10, r10
  jnz fail
  MMIO_R 0
  cmp r11d, 0x74726976
  jne fail
  MMIO_W 0x70, 0
  MMIO_W 0x70, 1
  MMIO_W 0x70, 3
  MMIO_W 0x24, 0
  MMIO_W 0x20, 0
  MMIO_W 0x24, 1
  MMIO_W 0x20, 3
  MMIO_W 0x70, 0xb
  MMIO_R 0x70
  test r11d, 8
  jz fail
  MMIO_W 0x30, 0
  MMIO_W 0x38, 8
  MMIO_W 0x80, 0x200000
  MMIO_W 0x84, 0
  MMIO_W 0x90, 0x200100
  MMIO_W 0x94, 0
  MMIO_W 0xa0, 0x200200
  MMIO_W 0xa4, 0
  MMIO_W 0x44, 1
  MMIO_W 0x70, 0xf
  # descriptors, header, avail ring in shared memory
  movabs rdi, SH
  mov qword ptr [rdi], 0x200400
  mov dword ptr [rdi + 8], 16
  mov word ptr [rdi + 12], 1
  mov word ptr [rdi + 14], 1
  mov qword ptr [rdi + 16], 0x201000
  mov dword ptr [rdi + 24], 512
  mov word ptr [rdi + 28], 3
  mov word ptr [rdi + 30], 2
  mov qword ptr [rdi + 32], 0x200420
  mov dword ptr [rdi + 40], 1
  mov word ptr [rdi + 44], 2
  mov word ptr [rdi + 46], 0
  mov dword ptr [rdi + 0x400], 0
  mov dword ptr [rdi + 0x404], 0
  mov qword ptr [rdi + 0x408], 0
  mov byte ptr [rdi + 0x420], 0xff
  mov word ptr [rdi + 0x104], 0
  mov word ptr [rdi + 0x100], 0
  mov word ptr [rdi + 0x102], 1
  MMIO_W 0x50, 0
  # Poll the used ring (an external vhost-user backend completes asynchronously), bounded.
  movabs rdi, SH
  mov ecx, 20000000
poll:
  cmp word ptr [rdi + 0x202], 1
  je polled
  dec ecx
  jnz poll
  jmp fail
polled:
  cmp byte ptr [rdi + 0x420], 0
  jne fail
  # print the first 16 bytes of sector 0
  mov rbx, 16
  movabs rsi, SH + 0x1000
print:
  VMCALL_SETUP
  mov r11d, 30
  mov r12d, 1
  mov r13d, 1
  mov r14d, 0x3f8
  movzx r15d, byte ptr [rsi]
  out 0xdc, al
  inc rsi
  dec rbx
  jnz print
  xor r15d, r15d
  jmp done
fail:
  mov r15d, 1
done:
  VMCALL_SETUP
  mov r11d, 30
  mov r12d, 1
  mov r13d, 1
  mov r14d, 0x501
  out 0xdc, al
  hlt
